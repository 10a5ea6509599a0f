# CPU image. For the CUDA execution provider see README "GPU workers".
FROM node:20-bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends redis-server dcmtk && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY package.json package-lock.json ./
ENV ONNXRUNTIME_NODE_INSTALL=skip
RUN npm ci --omit=dev --no-audit --no-fund
COPY src ./src
COPY workers ./workers
COPY models ./models
ENV GATEWAY_DATA_DIR=/data GATEWAY_MODELS_DIR=/app/models
VOLUME ["/data"]
EXPOSE 11112 8080
ENTRYPOINT ["node", "--initial-old-space-size=128", "--import", "tsx", "src/cli.ts"]
CMD ["all"]
