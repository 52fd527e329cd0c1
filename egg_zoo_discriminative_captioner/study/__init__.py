"""A human retrieval study in the browser (the paper's Table 6), on any captioners' stimuli.

    python -m egg.zoo.discriminative_captioner.study build STIMULI_DIR STUDY_DIR   # design.py: seeded assignment
    python -m egg.zoo.discriminative_captioner.study serve STUDY_DIR               # app.py + store.py: FastAPI, SQLite
    python -m egg.zoo.discriminative_captioner.study export STUDY_DIR              # export.py: CSV, table, chart

``stimuli.py`` reads the hard-distractor sets that ``evaluate`` exports; ``templates/`` and ``static/`` hold the
pages.  A study directory holds ``study.json`` (the design), ``images/``, ``participants.csv`` (the links),
``study.db`` (the answers, created by ``serve``) and ``results/`` (written by ``export``).
"""
