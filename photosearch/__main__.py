from photosearch.cli import run

run()
