"""The only HTTP client: wazo-auth tokens and the wazo-confd resources HA touches."""

from __future__ import annotations

import logging
from typing import Any

import requests
import urllib3

from ..errors import WazoHaError
from ..settings import WazoApi as ApiSettings

logger = logging.getLogger('wazo-ha')


class ApiError(WazoHaError):
    """A Wazo API did not answer (status None), or answered with an error status."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


def read_key_file(path: str) -> tuple[str, str]:
    """service_id and service_key from a wazo-auth-keys YAML file (flat `key: value` lines)."""
    values = {}
    try:
        with open(path, encoding='utf-8') as f:
            for line in f:
                key, sep, value = line.partition(':')
                if sep:
                    values[key.strip()] = value.strip().strip('"\'')
    except OSError as e:
        raise ApiError(f'cannot read the Wazo API credentials {path}: {e.strerror}') from None
    try:
        return values['service_id'], values['service_key']
    except KeyError:
        raise ApiError(f'{path} lacks service_id or service_key') from None


class Client:
    def __init__(self, settings: ApiSettings, session: requests.Session | None = None):
        self.settings = settings
        self.session = session or requests.Session()
        self.session.verify = settings.verify
        if settings.verify is False:  # chosen in the settings: no warning on stderr each call
            urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
        self._token: str | None = None

    def _request(self, method: str, url: str, **kwargs) -> Any:
        try:
            response = self.session.request(method, url, timeout=self.settings.timeout, **kwargs)
        except requests.RequestException as e:
            raise ApiError(f'{method} {url}: no answer ({type(e).__name__})') from None
        logger.debug('%s %s -> %s', method, url, response.status_code)
        if response.status_code >= 400:
            raise ApiError(f'{method} {url}: HTTP {response.status_code}: '
                           f'{response.text[:200].strip()}', response.status_code)
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise ApiError(f'{method} {url}: the answer is not JSON') from None

    def token(self) -> str:
        if self._token is None:
            service_id, key = read_key_file(self.settings.key_file)
            body = self._request('POST', f'{self.settings.auth_url}/token',
                                 auth=(service_id, key), json={'expiration': 600})
            try:
                self._token = body['data']['token']
            except (TypeError, KeyError):
                raise ApiError(f'{self.settings.auth_url}/token: no token in the answer') from None
        return self._token

    def confd(self, method: str, path: str, tenant: str | None = None, body: Any = None) -> Any:
        headers = {'X-Auth-Token': self.token(), 'Accept': 'application/json'}
        if tenant:
            headers['Wazo-Tenant'] = tenant
        kwargs: dict = {'headers': headers}
        if body is not None:
            kwargs['json'] = body
        return self._request(method, f'{self.settings.confd_url}{path}', **kwargs)

    # the resources

    def put_ha(self, body: dict) -> None:
        self.confd('PUT', '/ha', body=body)

    def get_ha(self) -> dict:
        return self.confd('GET', '/ha')

    def tenants(self) -> list[dict]:
        return self.confd('GET', '/tenants?recurse=true').get('items', [])

    def sip_template(self, tenant: str, uuid: str) -> dict:
        return self.confd('GET', f'/endpoints/sip/templates/{uuid}', tenant=tenant)

    def put_sip_template(self, tenant: str, uuid: str, body: dict) -> None:
        self.confd('PUT', f'/endpoints/sip/templates/{uuid}', tenant=tenant, body=body)

    def registrars(self) -> list[dict]:
        return self.confd('GET', '/registrars').get('items', [])

    def put_registrar(self, registrar_id: str, body: dict) -> None:
        self.confd('PUT', f'/registrars/{registrar_id}', body=body)
