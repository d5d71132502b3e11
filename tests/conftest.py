import os

# Tests run on the CPU with few threads: the machine has 2 cores and tests may run beside other work.
os.environ.setdefault("OMP_NUM_THREADS", "2")
