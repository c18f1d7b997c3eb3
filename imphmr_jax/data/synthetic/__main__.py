"""``python -m imphmr_jax.data.synthetic``: see :func:`imphmr_jax.data.synthetic.cli.main`."""
from imphmr_jax.data.synthetic.cli import main

if __name__ == "__main__":
    from imphmr_jax import cli
    cli.run(main)
