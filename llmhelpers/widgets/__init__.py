"""ipywidgets for the notebooks; logic here, tested headless, one submodule per topic."""
