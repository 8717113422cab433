"""Fixed paths of every stage's outputs, relative to the project root (dvc.yaml names the same paths)."""

from pathlib import Path

SCRAPED = Path("data/scraped")
EXTERNAL = Path("data/external")
DOWNLOADS = Path("data/downloads")
PROCESSED = Path("data/processed")
RANKED = Path("data/ranked")
SYNTHETIC = Path("data/synthetic")
TRANSLATED = Path("data/translated")
FEATURE_CACHE = Path("data/cache/features")  # Inception features keyed by content: safe to delete
REPORTS = Path("reports")
METRICS = Path("metrics")
GAN_MODELS = Path("models/gan")
GAN_LIVE = Path("dvclive/train")
CYCLEGAN_MODELS = Path("models/cyclegan")
CYCLEGAN_LIVE = Path("dvclive/cyclegan")
SUBMISSION = Path("submission/images.zip")
SINGAN = Path("data/singan")  # ConSinGAN variations of single paintings
SINGAN_MODELS = Path("models/singan")
SINGAN_LIVE = Path("dvclive/singan")  # one folder per painting
