"""The held-out split names every stage shares (drawn in ``preprocessing.manifest``)."""

TRAIN, HELDOUT = "train", "heldout"
SPLITS = (TRAIN, HELDOUT)
