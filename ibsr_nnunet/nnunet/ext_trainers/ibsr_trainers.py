"""Lets nnU-Net's own CLI find our trainers:
`nnUNet_extTrainer=<this folder> nnUNetv2_train ... -tr IbsrTrainer_5ep_10it`."""


def __getattr__(name: str):
    from ibsr_nnunet.nnunet.trainer import trainer_class

    return trainer_class(name)
