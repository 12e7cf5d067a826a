"""The workflow's stages (file in, file out), summaries, the command line and job logs."""
