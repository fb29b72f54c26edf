"""Fine-tuning data and trainers. ``finetune.convert`` turns trajectories (ours or FireAct's) into
Alpaca / GPT rows, per-step SFT rows and DPO pairs; see ``python -m finetune.convert --help``."""
