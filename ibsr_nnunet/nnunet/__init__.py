"""The one door to nnU-Net v2: only modules of this package import nnunetv2, and only inside functions.

paths: names and folders of trainers, models and folds (no nnunetv2 needed); fold: what a fold folder holds
(finished, its logs' epochs, its validation summary, its checkpoints); environment: nnU-Net's variables and
process pools; integrity: its dataset check; plan; plans: the plans, splits, plan stamp and preprocessed dataset.json
and fingerprint as later steps read them; trainer: our durable trainer classes; train; predict: best configuration,
prediction, ensembling, postprocessing; ensemble: the `ensemble` step; prediction_record: a prediction set's
model.json; validation: its pooled cross-validation Dice, read from its summaries. ext_trainers/ points nnU-Net's
own CLI at our trainers.
"""
