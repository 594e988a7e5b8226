# dplab: two commands do everything from a fresh clone.
#   make test   creates .venv if missing, installs, runs the whole test suite
#   make book   creates .venv if missing, installs, executes every chapter (book profile)
#               and builds the HTML book into _build/html
#   make book-student  the same book for students, every solution removed (cells tagged
#               `solution`, boxes with the class `solution`), into _build/student/html
#   make weights retrains the shipped CPU networks from scratch (dplab/weights/, with cards);
#               deterministic and resumable: run it again after an interruption
#   make bench  runs every speed benchmark (CPU, and CUDA when present) and saves the JSON record
#               into benchmarks/results/, which the book's appendix (book/performance) shows
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Strict Sphinx: warnings are errors, nitpicky references, report all problems at once.
JB_FLAGS ?= -W -n --keep-going
PYTEST_ARGS ?=

.PHONY: venv test book book-student bench gpu-check lab vendor clean clean-cache clean-outputs weights

venv: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	@touch $(STAMP)

test: $(STAMP)
	MPLBACKEND=agg $(BIN)/python -m pytest $(PYTEST_ARGS)

# The jupyter cache keys on notebook code only; a change in dplab/, a new benchmark record
# (the performance appendix shows them) or another data directory must re-execute the book.
# Sphinx's pickled environment (.doctrees) must go too, or it re-reads no unchanged page.
_build/.dplab-hash: FORCE
	@mkdir -p _build
	@new=$$( { { find dplab -name '*.py' -print0; find benchmarks/results -name '*.json' -print0 2>/dev/null; } | sort -z | xargs -0 sha256sum; \
	         echo "DPLAB_DATA=$$DPLAB_DATA"; } | sha256sum | cut -d' ' -f1); \
	 old=$$(cat $@ 2>/dev/null); \
	 if [ "$$new" != "$$old" ]; then \
	   echo "dplab, benchmark records or DPLAB_DATA changed: dropping the execution cache"; \
	   rm -rf _build/.jupyter_cache _build/.doctrees _build/student/_build/.doctrees; \
	   if [ -d book/outputs ]; then echo "note: chapters resume finished runs from book/outputs/ (trained with the" \
	     "previous dplab); 'make clean-outputs' retrains them from scratch"; fi; \
	   echo "$$new" > $@; fi

book: $(STAMP) _build/.dplab-hash
	TQDM_DISABLE=1 $(BIN)/jupyter-book build . $(JB_FLAGS)
	@echo "Book: $(CURDIR)/_build/html/index.html"

# The student edition: the same sources and execution cache, built by jupyter-book under
# _build/student/_build/ with DPLAB_EDITION=student, which book/_ext/dplab_student.py reads;
# _build/student/html links to the HTML.
book-student: $(STAMP) _build/.dplab-hash
	DPLAB_EDITION=student TQDM_DISABLE=1 $(BIN)/jupyter-book build . $(JB_FLAGS) --path-output _build/student
	@ln -sfn _build/html _build/student/html
	@echo "Student edition: $(CURDIR)/_build/student/html/index.html"

# BENCH_ARGS, e.g. "--devices cuda" or "--cpu-scale 0.5 --threads 2" (see benchmarks/suite.py --help).
BENCH_ARGS ?=
bench: $(STAMP)
	$(BIN)/python benchmarks/suite.py --json benchmarks/results/ $(BENCH_ARGS)

# Run first on any CUDA machine (one H100/H200, under 10 minutes): the CUDA tests, the suite on CUDA
# (fp32, bf16), each network chapter in the full profile stopped at a time cap, the full-size MPI step;
# records into benchmarks/results/ (see benchmarks/gpu_check.py). GPU_CHECK_ARGS, e.g. "--dry-run",
# "--cpu-smoke" (the same plumbing on the CPU, tiny sizes) or "--results DIR --logs DIR".
GPU_CHECK_ARGS ?=
gpu-check: $(STAMP)
	$(BIN)/python benchmarks/gpu_check.py $(GPU_CHECK_ARGS)

# One process per network, one thread each, two at a time (a 2-core machine): see README.
# WEIGHTS_ARGS, e.g. "--only dpdnet mdp". The data and runs stay in _build/weights/.
WEIGHTS_JOBS ?= 2
WEIGHTS_ARGS ?=
weights: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python -m dplab weights --data-only
	OMP_NUM_THREADS=1 $(BIN)/python -m dplab weights --jobs $(WEIGHTS_JOBS) $(WEIGHTS_ARGS)

# JupyterLab refuses to start as root without --allow-root (containers, CI machines).
lab: $(STAMP)
	$(BIN)/jupyter lab book/ $(if $(filter 0,$(shell id -u)),--allow-root,)

# Refresh the vendored JavaScript from the npm registry (versions in book/_vendor/VERSIONS.md).
MATHJAX_VERSION      := 3.2.2
REQUIREJS_VERSION    := 2.3.8
HTML_MANAGER_VERSION := 1.0.15
vendor:
	rm -rf _build/npm && mkdir -p _build/npm
	cd _build/npm && npm pack --silent mathjax@$(MATHJAX_VERSION) requirejs@$(REQUIREJS_VERSION) \
	  @jupyter-widgets/html-manager@$(HTML_MANAGER_VERSION) >/dev/null
	cd _build/npm && for f in *.tgz; do mkdir -p $${f%.tgz} && tar xzf $$f -C $${f%.tgz}; done
	mkdir -p book/_vendor/mathjax book/_vendor/requirejs book/_vendor/html-manager
	cp _build/npm/mathjax-*/package/es5/tex-svg-full.js _build/npm/mathjax-*/package/LICENSE book/_vendor/mathjax/
	cp _build/npm/requirejs-*/package/require.js book/_vendor/requirejs/
	cp _build/npm/jupyter-widgets-html-manager-*/package/dist/embed-amd.js \
	   _build/npm/jupyter-widgets-html-manager-*/package/dist/*.woff* \
	   _build/npm/jupyter-widgets-html-manager-*/package/dist/embed.js.LICENSE.txt book/_vendor/html-manager/

# Sphinx re-reads (and so re-executes) only documents it thinks changed: drop its environment too.
clean-cache:
	rm -rf _build/.jupyter_cache _build/.doctrees _build/.dplab-hash _build/student/_build/.doctrees

# What the chapters trained and rendered (weights, synthetic sets); they resume from it.
clean-outputs:
	rm -rf book/outputs

clean:
	rm -rf _build

FORCE:
