"""Reading VESL output in training jobs: image/box transforms of the training input, patch-level
targets, a PyTorch IterableDataset, and tf.data / numpy readers of the TFRecords."""
