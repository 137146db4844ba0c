@echo off
rem Hearth launcher for Windows: a straight translation of start.sh (not run in CI; see README).
rem Usage: start.bat [flags]        (flags also read from CMD_FLAGS.txt)
rem        start.bat --install-only
setlocal
cd /d "%~dp0"

set VENV=.venv
set MARKER=%VENV%\.hearth-installed
if "%PYTHON%"=="" set PYTHON=python

if not exist "%MARKER%" goto install
goto run

:install
%PYTHON% -c "import sys; sys.exit(sys.version_info < (3, 10))" || (echo Hearth needs Python 3.10 or newer. & exit /b 1)
if not exist "%VENV%\Scripts\python.exe" (
    echo Creating a virtual environment in %VENV% ...
    %PYTHON% -m venv %VENV% || exit /b 1
)
"%VENV%\Scripts\python.exe" -m pip install --quiet --upgrade pip
set TARGET=.
set GPU=0
where nvidia-smi >nul 2>nul && where nvcc >nul 2>nul && set GPU=1
if "%GPU%"=="1" (
    echo An NVIDIA GPU and the CUDA toolkit are present.
    if "%HEARTH_GPU%"=="" (set /p HEARTH_GPU="Install GPU support (llama.cpp built with CUDA, ExLlamaV2 and ExLlamaV3)? [Y/n] ")
)
if "%HEARTH_GPU%"=="" set HEARTH_GPU=y
if "%GPU%"=="1" if /i not "%HEARTH_GPU:~0,1%"=="n" (
    set CMAKE_ARGS=%CMAKE_ARGS% -DGGML_CUDA=on
    set TARGET=.[exllamav2,exllamav3]
)
echo Installing Hearth and its dependencies.
echo llama-cpp-python compiles llama.cpp from source: this takes several minutes the first time.
"%VENV%\Scripts\python.exe" -m pip install -e "%TARGET%" || exit /b 1
type nul > "%MARKER%"

:run
if "%~1"=="--install-only" exit /b 0
"%VENV%\Scripts\python.exe" -m webui %*
