"""Every page may quote the clinician's wording (diagnosis/wording.py): the disclaimer, the heat map's limits."""

from . import wording as wording_module


def wording(request):
    return {"wording": wording_module}
