"""Training: encoder distillation and whole-model fine-tuning (PIPELINES.md §4-5).

`medsamlite-torch train distill|finetune|embed --config FILE`; the same config runs on one CPU, one
GPU, or many GPUs/nodes under `torchrun` (DistributedDataParallel). Needs PyYAML and TensorBoard;
the extension never imports this package.
"""
