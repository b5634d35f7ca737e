"""Dataset preparation: official layouts -> split files, and face cropping of raw videos."""
