"""gunicorn settings for skinCare, read from the working directory:

    gunicorn skincare_site.wsgi

Flags on the command line (or GUNICORN_CMD_ARGS) win over these.
"""

import os

# Loopback by default: a TLS proxy in front forwards to it (README, "Deploy").
bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
# A prediction takes well under a second once the model is loaded; the margin is for
# a worker that has to load it (SKINCARE_WARM_MODEL=0) on a busy machine.
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "120"))
graceful_timeout = 30
accesslog = "-"
errorlog = "-"
# /dev/shm keeps the worker heartbeat off the disk (uploads are held in memory: diagnosis/uploadhandler.py).
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None
# No gunicornc control socket: several servers (tests, the load test) may run side by side.
control_socket_disable = True


def post_worker_init(worker):
    """Load the model (and run it once) before the worker takes its first request, so
    that no clinician waits for TensorFlow to start. SKINCARE_WARM_MODEL=0 leaves it
    to the first prediction. With no model installed the site still works: uploads
    are stored as not assessed, as without this hook."""
    if os.environ.get("SKINCARE_WARM_MODEL", "1").strip().lower() in {"0", "false", "no", "off"}:
        return
    import io

    from PIL import Image

    from ml.serving import classifier

    try:
        classifier.get_model()
        blank = io.BytesIO()
        Image.new("RGB", (224, 224), (180, 120, 100)).save(blank, format="PNG")
        classifier.predict(blank.getvalue())
    except classifier.ModelUnavailable as exc:
        worker.log.warning("No model to warm up: %s", exc)
    except Exception:  # a warm-up must never stop the worker; the first request will say what is wrong
        worker.log.exception("Model warm-up failed")
    else:
        worker.log.info("Model loaded and warmed up in worker %s", worker.pid)
