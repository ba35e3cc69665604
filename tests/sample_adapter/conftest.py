"""The package's own tests import ``acme_ioc`` from this folder, as after ``pip install -e .``
(pytest puts a conftest's folder on ``sys.path`` when the folder is not a package)."""
