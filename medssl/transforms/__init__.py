"""Transforms: views for contrastive methods, masking for masked image modelling, intensity transforms."""
