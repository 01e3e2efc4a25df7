"""Credentials of an object store beyond the standard AWS_* variables."""

from __future__ import annotations

import os
from typing import Any


def profile_options(name: str) -> dict[str, Any]:
    """A named profile of the AWS config files (AWS_PROFILE), read by boto3's session: its
    credentials, refreshed as they expire (SSO, assumed roles), and its region."""
    try:
        import boto3
        from obstore.auth.boto3 import Boto3CredentialProvider
    except ImportError:
        raise ValueError(
            f"AWS_PROFILE={name!r} needs boto3 to read the profile: pip install boto3 (or give "
            "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, or the pod's identity)"
        ) from None
    session = boto3.Session(profile_name=name)
    options: dict[str, Any] = {"credential_provider": Boto3CredentialProvider(session)}
    if session.region_name and "AWS_REGION" not in os.environ:
        options["region"] = session.region_name
    return options
