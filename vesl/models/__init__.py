"""Model code: the detector seam (``detector``: the interface; ``backends``: the registry; ``handler``:
the one RunInference handler, the only Beam import here), the torch backend (``torch_backend`` over
the OWLv2 core ``owlv2``), checkpoint loading, devices and the captioner."""
