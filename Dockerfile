# The tutorial's scripts, for the compose demo: docker compose --profile demo up
# The base: PYTHON_IMAGE, a build argument (docker-compose.yml passes the variable of that name).
ARG PYTHON_IMAGE=python:3.14-slim
FROM ${PYTHON_IMAGE}
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /app
COPY requirements.txt ./
RUN pip install --no-cache-dir -r requirements.txt
COPY new_task.py worker.py ./
COPY workqueue ./workqueue
# Compiled once here: the scripts run as nobody, who may not write __pycache__, and a run that compiles
# workqueue/ from source each time starts 15-20 ms later.
RUN python -m compileall -q workqueue
USER nobody
CMD ["python", "worker.py"]
