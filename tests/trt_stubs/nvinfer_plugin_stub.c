/* Stand-in for libnvinfer_plugin.so.10 (see nvinfer_stub.c): "no plugins registered". */
int initLibNvInferPlugins(void* logger, const char* libNamespace) { (void)logger; (void)libNamespace; return 0; }
