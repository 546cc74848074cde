"""Loopback stand-ins for the image services, for the tests, the benchmark and demos.

Each fake speaks its service's real wire format on 127.0.0.1 (a free port), is as strict
as the service about malformed requests, and fails on demand with the bodies real services
send. None of this is used to talk to a real service.
"""
