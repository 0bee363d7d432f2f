"""The station's line-facing outputs: each is a sink (:class:`~defectdet.station.sink.BaseSink`)
built by :mod:`defectdet.station.registry` only when its config section enables it.

    signals.py      what the reject/alarm outputs share (SignalError, payload) and the stdout one
    gpio.py         a Jetson GPIO pin pulse per reject
    mqtt.py         an MQTT message per reject (and per missed reject, on <topic>/alarm)
    webhook.py      an HTTP POST per reject (and per missed reject)
    modbus.py       PLC over Modbus TCP: reject/alarm coils, counters in holding registers
    opcua.py        an OPC UA server: counters, health, the last decision
    page.py         the operator page (page_html.py), served by web.py
    metrics.py      a Prometheus /metrics endpoint
    web.py          the aiohttp server the page and metrics share
    live.py         what the servers share: LineCounters, health, bind/token checks, AsyncService

From the rest of the station they import only the sink contract (``sink``, ``result``) and the
run's line safety (``safety``); nothing in the station imports them but the registry and the
``defectdet review`` command. Optional libraries (pymodbus, asyncua, aiohttp, prometheus_client,
paho-mqtt, Jetson.GPIO) are imported only when an output is constructed.
"""
