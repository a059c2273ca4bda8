"""airavata-hpc: an HPC job service implementing the Airavata Scheduler API."""

__version__ = "0.1.0"
