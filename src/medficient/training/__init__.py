"""Training: encoder distillation and whole-model fine-tuning (PIPELINES.md §4-5).

`medficient train distill|finetune|embed --config FILE`; the same config runs on one CPU, one GPU,
or many GPUs/nodes under `torchrun` (DistributedDataParallel). Needs the `train` extra (PyYAML,
TensorBoard); inference never imports this package.
"""
