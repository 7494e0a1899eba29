# The tutorial's scripts, for the compose demo: docker compose --profile demo up
FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /app
COPY requirements.txt ./
RUN pip install --no-cache-dir -r requirements.txt
COPY new_task.py worker.py ./
COPY workqueue ./workqueue
COPY demo ./demo
USER nobody
CMD ["python", "worker.py"]
