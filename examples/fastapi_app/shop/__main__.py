"""``python -m shop``: serve the shop on http://127.0.0.1:8000 (console at /workflows/)."""

import uvicorn

from shop.app import create_app

if __name__ == "__main__":
    uvicorn.run(create_app(), host="127.0.0.1", port=8000)
