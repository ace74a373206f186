"""Evidence under every science number: a ladder of baselines, intervals, repeated splits.

A pure library (numpy, scipy, scikit-learn, librosa, matplotlib; no Kedro, MLflow or
torch). The pipelines hand it per-track arrays and get back typed results and tables.
Definitions and how to read them: ``docs/evaluation.md``.

Array names end in their shape: ``T`` tracks, ``N`` frames of one track, ``U`` units
scored by an AUROC (tracks or clips), ``F`` features, ``D`` input or descriptor
dimensions, ``J`` pooled columns, ``C`` concepts, ``B`` label rows, ``R`` resamples.
"""
