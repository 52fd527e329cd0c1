"""The captioners: ClipCap, BLIP and transformers captioners, their decoding, files and protocols."""
