"""The distillation loop: set-up, the student's loss step, the losses, validation and probes while training,
the Accelerator's lifecycle and the checks made before anything loads."""
