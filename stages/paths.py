"""Fixed paths of every stage's outputs, relative to the project root (dvc.yaml names the same paths)."""

from pathlib import Path

SCRAPED = Path("data/scraped")
EXTERNAL = Path("data/external")
DOWNLOADS = Path("data/downloads")
PROCESSED = Path("data/processed")
