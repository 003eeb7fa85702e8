"""TWAMP (RFC 5357; control and security from OWAMP, RFC 4656): ``services rpm twamp``.

Hook implementations only; wire formats in :mod:`.wire`, security in :mod:`.crypto`.
"""
