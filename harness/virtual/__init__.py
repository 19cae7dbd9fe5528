"""The virtual PCM chip: calibrated device physics behind the Chip protocol."""
