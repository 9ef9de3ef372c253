"""Multi-seed studies: every variant x seed of a study file, resumable, with a summary table and plots."""
