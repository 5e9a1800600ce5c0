from cantainer.cli import run

run()
