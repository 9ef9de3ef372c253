"""The engine every training command shares: run directory, seeding, device and process group,
resumable sampler, LR schedules, atomic checkpoints, graceful stop and the loop itself."""
