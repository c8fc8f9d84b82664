"""What the system accepts as an input file, in a module light enough for the producer.

The producer never decodes an image; importing these from `digits.images` would load numpy
and Pillow into every `digits-producer` command (a tenth of a second at each start).
"""

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".pgm", ".ppm", ".pbm", ".pnm", ".gif")
DEFAULT_MAX_BYTES = 20 * 1024 * 1024  # larger files are refused by the producer, unread
DEFAULT_MAX_PIXELS = 40_000_000  # decompression-bomb guard: workers refuse larger images before decoding
