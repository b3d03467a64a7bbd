"""``python -m models.hugectr --data PROC_DIR --out DIR [--config FILE]``: see
``models/hugectr/cli.py``."""

import sys

if __name__ == "__main__":
    from preprocessing.tensorflow_free import keep_tensorflow_out
    keep_tensorflow_out()  # before anything imports merlin: nothing here trains
    from models.hugectr.cli import main
    sys.exit(main())
