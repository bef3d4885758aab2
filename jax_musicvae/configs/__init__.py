"""Experiment configurations: each module has get_config() -> ExperimentConfig."""
