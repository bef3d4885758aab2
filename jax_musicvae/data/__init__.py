"""Framework-free data handling (numpy only): MIDI, representations, datasets, danceability."""
