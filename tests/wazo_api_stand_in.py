"""A stand-in for wazo-auth and wazo-confd on 127.0.0.1 that records every request."""

import copy
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TOKEN = 'stand-in-token'
TENANT = '11111111-1111-4111-8111-111111111111'
TEMPLATE = '22222222-2222-4222-8222-222222222222'


class WazoStandIn:
    def __init__(self):
        self.requests = []
        self.template = {'uuid': TEMPLATE, 'label': 'global', 'tenant_uuid': TENANT,
                         'aor_section_options': [['qualify_frequency', '60'],
                                                 ['maximum_contacts', '1']],
                         'links': [{'rel': 'endpoint_sip_templates'}]}
        self.registrars = [{'id': 'default', 'name': 'local', 'main_host': '198.18.0.1',
                            'backup_host': None, 'proxy_main_host': '198.18.0.1',
                            'proxy_backup_host': None, 'links': []}]
        self.ha = {'node_type': 'disabled', 'remote_address': ''}
        self.route_ha_status = 204
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _body(self):
                length = int(self.headers.get('Content-Length') or 0)
                return json.loads(self.rfile.read(length)) if length else None

            def _reply(self, code, body=None):
                data = json.dumps(body).encode() if body is not None else b''
                self.send_response(code)
                self.send_header('Content-Type', 'application/json')
                self.send_header('Content-Length', str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _handle(self, method):
                body = self._body()
                stand_in.requests.append((method, self.path, body))
                if self.path == '/auth/token' and method == 'POST':
                    return self._reply(200, {'data': {'token': TOKEN}})
                if self.headers.get('X-Auth-Token') != TOKEN:
                    return self._reply(401, {'message': 'unauthorized'})
                return self._reply(*stand_in.route(method, self.path, body,
                                                   self.headers.get('Wazo-Tenant')))

            def do_GET(self):
                self._handle('GET')

            def do_POST(self):
                self._handle('POST')

            def do_PUT(self):
                self._handle('PUT')

        self.server = ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        self.url = f'http://127.0.0.1:{self.server.server_port}'
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def route(self, method, path, body, tenant):
        template_path = f'/confd/endpoints/sip/templates/{TEMPLATE}'
        if (method, path) == ('GET', '/confd/tenants?recurse=true'):
            return 200, {'items': [{'uuid': TENANT, 'global_sip_template_uuid': TEMPLATE}]}
        if path == template_path and tenant == TENANT:
            if method == 'GET':
                return 200, copy.deepcopy(self.template)
            self.template = {**body, 'links': self.template['links']}
            return 204, None
        if (method, path) == ('GET', '/confd/registrars'):
            return 200, {'items': copy.deepcopy(self.registrars)}
        if method == 'PUT' and path.startswith('/confd/registrars/'):
            self.registrars = [body if r['id'] == body['id'] else r for r in self.registrars]
            return 204, None
        if path == '/confd/ha':
            if method == 'GET':
                return 200, self.ha
            if self.route_ha_status >= 400:
                return self.route_ha_status, {'message': 'Input Error - remote_address'}
            self.ha = body
            return 204, None
        return 404, {'message': f'no {method} {path} here'}

    def writes(self):
        return [(m, p, b) for m, p, b in self.requests if m in ('PUT', 'POST') and p != '/auth/token']

    def expiry(self):
        return {k: v for k, v in self.template['aor_section_options'] if k.endswith('_expiration')}

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
