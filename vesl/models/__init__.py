"""Model code: checkpoint loading and the OWLv2 detector core. No Beam import here."""
