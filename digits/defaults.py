"""Every default setting of the system, in one place (as RQ keeps its own in rq/defaults.py).

Each component takes these as the defaults of its options and passes the values it was given
explicitly from there on. Light on purpose: no numpy, so any process may import it.
"""

# Inputs: what the system accepts and the limits checked before any work on it
EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".pgm", ".ppm", ".pbm", ".pnm", ".gif")
MAX_BYTES = 20 * 1024 * 1024  # larger files are refused by the producer, unread
MAX_PIXELS = 40_000_000  # decompression-bomb guard: workers refuse larger images before decoding
MAX_DECODED_BYTES = 24 * 1024 * 1024  # ... and images whose pixels take more than this decoded (read from the header)
MAX_WORK_PIXELS = 2_000_000  # larger images are shrunk (greyscale, whole factors) before any float copy
MAX_PIECES = 120  # separate pieces of ink in a crop (generated 5-digit crops: at most 26): more is noise,
# refused before joining and cutting them, whose cost grows with the cube of the count

# Models: what a theta file may cost before it is parsed (docs/theta-format.md)
MAX_HIDDEN = 4096  # hidden units: theta1 is 785 x H (H = 4,096 is about 80 MB of CSV text)
MAX_WEIGHT_ROWS = 16_384  # rows under a layer file's bias row: a dense layer's inputs, a convolution's
# kh * kw * c_in (the strip reader's 7x13 window over 64 channels: 5,824)
MAX_THETA_FILE_BYTES = 96 * 1024 * 1024  # a theta file on disk (plain or gzipped), checked before it is read
MAX_THETA_TEXT_BYTES = 96 * 1024 * 1024  # its CSV text: a gzip file is refused once it inflates past this
MAX_MANIFEST_BYTES = 1024 * 1024  # a version's manifest.json
MAX_LAYERS = 16  # layers of an N-layer model (manifest `layers`)
MAX_KERNEL = 15  # a convolution window's side (a strip reader's 7x13 spans two digits at a frame every 2 columns)
MAX_MACS_PER_DIGIT = 20_000_000  # multiply-adds of one 28x28 digit through a model (the MLP: 0.8 M, the CNN: 1.2 M)
MAX_FLOATS_PER_DIGIT = 1_000_000  # float32 temporaries of one digit in any layer (4 MB; the CNN preset: 41,000)
BLOCK_FLOATS = 4 * 1024 * 1024  # float32 temporaries of one block of digits in a forward pass (16 MB)

# A run: how a folder is cut and paced (measured in docs/benchmarks.md)
BATCH_SIZE = 1024  # most images per job (MNIST digits, 2 workers: 1,024 against 256 a job, +23% images/s) ...
BATCH_BYTES = 1024 * 1024  # ... and most image bytes: a batch of ~10 KB crops holds about 100 (2 s of work)
WINDOW = 32768  # most images of one run held in Redis at once, in at most WINDOW / BATCH_SIZE open batches
RESULT_TTL = 7 * 24 * 3600  # seconds a run's results stay in Redis
JOB_TIMEOUT = 600  # seconds one batch job may run
JOB_RETRIES = 2  # RQ retries of a batch whose job raised
JOB_RESULT_TTL = 3600  # seconds RQ keeps a finished job's return value

# A batch payload (digits/payload.py): what readers of a payload accept
MAX_BATCH_PATHS = 10_000  # the largest --batch-size
MAX_PATH_CHARS = 16_384  # a path, as the producer names it (display_name)

# Reading
REVIEW_THRESHOLD = 0.9  # codes read with less confidence are flagged for review

# Keying stations (`digits-producer review`)
REVIEW_PORT = 8471  # the station's page: http://127.0.0.1:8471/
CLAIM_SECONDS = 30  # an image on a station's screen is held this long past its last renewal (a third of it)
MAX_KEYED_CHARS = 32  # the longest code a station accepts, separators included

# A hot folder (`digits-producer watch`)
SETTLE = 2.0  # seconds a file must stay unchanged before it is sent (a scanner or a copy over the
# network pauses for a second or more while writing; 0.2 sent such files half-written)
MAX_DELAY = 0.05  # seconds the first file of a micro-batch may wait for more
POLL = 0.05  # seconds between folder scans

# Recovery of batches whose worker died (digits/recovery.py)
LEASE_SECONDS = 10  # a dead worker's batch is recovered at most this long (plus one sweep) after it died
LEASE_RENEW = 2.0  # seconds between renewals of a live worker's lease
MAX_ABANDONED = 3  # a batch whose worker died this many times gets failed results instead
STRANDED_SECONDS = 10  # a popped job is marked started within milliseconds by a live worker
PRODUCER_SWEEP_SECONDS = 2.0  # how often a producer checks the jobs of its open batches and reaps failed ones
SENDER_PARENT_SECONDS = 0.5  # how often a sender of `run --jobs` checks that its run is still there
SENDER_LEASE_SECONDS = 5.0  # a share's lease lapses this long after its producer last renewed it
FOLLOW_BATCHES = 4  # finished batches a follower reads at a time: 200 at once held 51,200 parsed results that the
# garbage collector walked again and again (CPU of `digits-producer results RUN -o /dev/null` on a finished
# 40,000-digit run, start-up included: 20.4 -> 12.5 µs a result)
RUN_START_SECONDS = 60.0  # `results --follow` started beside `enqueue --share` waits this long for the run to exist
SUPERVISOR_SWEEP_SECONDS = 5.0  # how often each worker supervisor looks for batches abandoned anywhere

# Redis
REDIS_TIMEOUT = 5.0  # seconds a connection or a reply may take before the command fails (patient clients retry)

# Workers
WORKER_TTL = 35  # seconds: an idle worker heartbeats every 20 s, so a dead one vanishes within 35 s
MAX_JOB_BYTES = 64 * 1024  # our jobs carry three small values; anything bigger is not ours
QUICK_DEATH = 5.0  # a worker process that fails this soon after starting doubles its next respawn delay
MAX_RESPAWN_DELAY = 30.0  # seconds, the most a respawn waits
