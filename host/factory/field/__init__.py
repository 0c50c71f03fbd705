"""The field: how images degrade out there (colour, exposure, noise, blur, compression), seeded shift
presets that copy a data set into such a field (``edgeloop data shift``), and (later) adaptation to it."""
