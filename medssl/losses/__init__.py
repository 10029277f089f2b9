"""Losses, pure torch: one file per loss family (reconstruction, contrastive, distillation ...)."""
