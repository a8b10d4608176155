from vqlab.cli import run

run()
