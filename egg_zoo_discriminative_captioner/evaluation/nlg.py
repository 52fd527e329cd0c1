"""Reference-based caption metrics through pycocoevalcap: BLEU-4, METEOR, ROUGE-L, CIDEr(-D) and SPICE.

Captions and references are PTB-tokenised by pycocoevalcap's own tokenizer first (lower case, punctuation
removed), as the COCO caption evaluation does.  PTBTokenizer, METEOR and SPICE run Java (1.8 or later); SPICE
also needs Stanford CoreNLP 3.6.0, which pycocoevalcap downloads on first use: where that fails, SPICE is
reported as unavailable (``None``) with the fix, and the other metrics are still computed.
"""

import contextlib
import os
import shutil
import sys
import tempfile

METRICS = ("bleu4", "meteor", "rouge_l", "cider", "spice")
_spice_failure = None  # why SPICE could not run in this process: its CoreNLP download is tried once, not per model


@contextlib.contextmanager
def quiet():
    """Silences pycocoevalcap's prints and its Java programs' progress lines (file descriptors 1 and 2, which
    the Java subprocesses inherit); what they printed is shown if the block fails."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    failed = False
    with tempfile.TemporaryFile() as log:
        try:
            os.dup2(log.fileno(), 1)
            os.dup2(log.fileno(), 2)
            with contextlib.redirect_stdout(sys.__stdout__), contextlib.redirect_stderr(sys.__stderr__):
                yield
        except BaseException:
            failed = True
            raise
        finally:
            sys.__stdout__.flush()
            sys.__stderr__.flush()
            for fd, copy in zip((1, 2), saved):
                os.dup2(copy, fd)
                os.close(copy)
            if failed:
                log.seek(0)
                sys.stderr.write(log.read().decode(errors="replace")[-2000:])


def spice_fix():
    """The one-line fix for a SPICE without its Stanford CoreNLP jars."""
    from pycocoevalcap.spice import spice

    lib = os.path.join(os.path.dirname(spice.__file__), "lib")
    return (
        f"put stanford-corenlp-3.6.0.jar and stanford-corenlp-3.6.0-models.jar (from "
        f"http://nlp.stanford.edu/software/stanford-corenlp-full-2015-12-09.zip) in {lib}"
    )


def tokenize(captions, references):
    """PTB-tokenised ``{key: [caption]}`` and ``{key: [reference, ...]}`` (keys as strings)."""
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    tokenizer = PTBTokenizer()
    generated = tokenizer.tokenize({k: [{"caption": c}] for k, c in captions.items()})
    human = tokenizer.tokenize({k: [{"caption": r} for r in refs] for k, refs in references.items()})
    return generated, human


def caption_metrics(captions, references, spice=True):
    """Corpus-level metrics of ``captions`` (``{image id: caption}``) against ``references`` (``{image id:
    [reference, ...]}``), as pycocoevalcap computes them (fractions, not percentages).

    Returns ``{"bleu4", "meteor", "rouge_l", "cider", "spice", "spice_error"}``; ``spice`` is ``None`` when it
    is switched off or cannot run, ``spice_error`` then says why and how to fix it.
    """
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge

    captions = {str(k): v for k, v in captions.items()}
    references = {str(k): v for k, v in references.items()}
    if set(captions) != set(references):
        raise ValueError("captions and references must cover the same image ids")
    if any(not refs for refs in references.values()):
        raise ValueError("every image needs at least one reference")
    if shutil.which("java") is None:
        error = "Java not found: PTBTokenizer, METEOR and SPICE need it (install a JRE, e.g. OpenJDK 17)"
        return dict.fromkeys(METRICS) | {"spice_error": error}
    global _spice_failure
    with quiet():
        generated, human = tokenize(captions, references)
        results = {
            "bleu4": Bleu(4).compute_score(human, generated)[0][3],
            "meteor": Meteor().compute_score(human, generated)[0],
            "rouge_l": Rouge().compute_score(human, generated)[0],
            "cider": Cider().compute_score(human, generated)[0],
            "spice": None,
            "spice_error": "SPICE switched off (--no-spice)" if not spice else _spice_failure,
        }
        if spice and _spice_failure is None:
            try:
                from pycocoevalcap.spice.spice import Spice

                results["spice"] = Spice().compute_score(human, generated)[0]
            except Exception as error:  # a failed download (URLError), a failed Java run (CalledProcessError), ...
                _spice_failure = f"SPICE unavailable ({type(error).__name__}: {error}); fix: {spice_fix()}"
                results["spice_error"] = _spice_failure
    return {key: (float(value) if isinstance(value, (int, float)) else value) for key, value in results.items()}
