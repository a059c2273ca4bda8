"""airavata-hpc: an HPC job service implementing the Airavata Scheduler API."""

from pathlib import Path

__version__ = "0.1.0"

# Run from a source checkout without installing (bin/airavata-hpc): the folders adapters/ and
# job_templates/ sit beside this package and install as its subpackages (setup.cfg's
# package_dir), so let the import system find them there as well.
_checkout = Path(__file__).resolve().parent.parent
if (_checkout / "setup.cfg").is_file() and (_checkout / "adapters" / "__init__.py").is_file():
    __path__.append(str(_checkout))
