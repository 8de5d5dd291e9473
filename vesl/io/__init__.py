"""Shard readers, output row codecs (TFRecord framing, tf.train.Example). No Beam import here."""
