"""Ray Train + Ray Tune/Optuna orchestration of alpha studies: trainables, search spaces,
configs, result tables and reports."""
