# calibseg entry points. Every target installs what it needs first (idempotent, into .venv/).
PY := .venv/bin/python
DATA := data/demo

.PHONY: install install-tests demo test lint bench data

install:
	@bash tools/install.sh

install-tests:
	@bash tools/install.sh --tests

data: install
	@test -f $(DATA)/VOCdevkit/VOC2012/ImageSets/Segmentation/val.txt || $(PY) tools/dataset_converters/generate_demo_data.py --out $(DATA)

demo: data
	@$(PY) tools/demo.py --data-root $(DATA)

# The suite and the package's docstring examples (>>>) in one run. The test files hold no examples (each runs once,
# as tests); the conftest.py files are left out of the doctest collection only (pytest still loads their fixtures).
test: install-tests
	@OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(PY) -m pytest tests calibseg --doctest-modules \
		--ignore-glob='tests/conftest.py' --ignore-glob='tests/*/conftest.py' -q -p no:cacheprovider

lint: install-tests
	@$(PY) -m ruff check .

bench: install-tests
	@for f in bench/*.py; do echo "== $$f"; $(PY) $$f; done
