"""The shared training engine: optimisation settings, exact resume, atomic checkpoints, monitoring, export and
the YAML-driven command line every pretraining method runs on."""
