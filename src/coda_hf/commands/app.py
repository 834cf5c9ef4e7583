"""``coda-hf app``: the interactive Gradio app of the tokenizer family (needs the ``app`` extra)."""

from __future__ import annotations

MODEL_FLAGS = {"coda": "CODA tokenizer", "vqgan": "VQGAN", "vae": "continuous AutoencoderKL",
               "prior": "MaskGIT prior (pipeline or transformer directory)", "latent_vae": "2-D DenseVAE"}  # fmt: skip


def register(subparsers) -> None:
    p = subparsers.add_parser("app", help="launch the interactive app (tokenize, architecture, latent space, codebook, ELBO, generate)")
    p.add_argument("--host", default="127.0.0.1", help="server address (0.0.0.0 to serve your network)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--share", action="store_true", help="also open a temporary public gradio.live link")
    for slot, what in MODEL_FLAGS.items():
        flag = "--" + slot.replace("_", "-")
        p.add_argument(flag, dest=slot, default=None, help=f"{what} directory; 'none' leaves it out (default: the bundled one)")
    p.add_argument("--beta-vae", dest="beta_vaes", action="append", default=None,
                   help="a DenseVAE directory with its training_config.json beta (repeat; default: the bundled ones)")
    p.add_argument("--photos", default=None, help="folder of photos to pick from (default: the bundled demo photos)")
    p.add_argument("--resolution", type=int, default=None,
                   help="side of the photos the tokenizers see (default: the VAE's sample_size, at most 256)")
    p.set_defaults(func=run)


def run(args) -> int:
    """A missing gradio or an unloadable model reaches the CLI's one-line error handler."""
    try:
        from ..app import DEFAULT, AppModels, build_app, launch
    except ImportError as e:
        raise ImportError(f"the app needs gradio: pip install 'coda_hf[app]' ({e})") from e

    def slot(value):
        if value is None:
            return DEFAULT
        return None if str(value).lower() == "none" else value

    models = AppModels.load(**{name: slot(getattr(args, name)) for name in MODEL_FLAGS},
                            beta_vaes=DEFAULT if args.beta_vaes is None else args.beta_vaes,
                            photos=DEFAULT if args.photos is None else args.photos,
                            resolution=args.resolution)  # fmt: skip
    launch(build_app(models), server_name=args.host, server_port=args.port, share=args.share)
    return 0
